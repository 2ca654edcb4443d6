"""Background work on taskiq: the broker, the SMS tasks and the SMS providers."""
