"""prompt_learning."""
