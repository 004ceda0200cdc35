"""The national benefit catalog: partners, benefit SKUs with one price, card-code pools, stock."""
