"""Insights: campaign evaluation (uplift with its uncertainty), imported histories, write-back."""
