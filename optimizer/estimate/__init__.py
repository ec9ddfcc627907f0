"""Pure physics: memory and speed from first principles. Never imports ortools."""
