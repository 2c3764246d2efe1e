"""Applications built on the whole chain (the end-to-end demo)."""
