"""Text: the Llama-3 tokenizer, the chat format, sampling and output constraints."""
