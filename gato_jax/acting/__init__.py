"""Acting: a trained Gato choosing actions step by step (the batched agent, its decode core, prompts)."""
