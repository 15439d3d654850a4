"""OpenAI-compatible image generation frontend."""
