"""The synthetic operator: realistic subscribers, usage and a hidden true response to offers."""
