"""Remote vision-language model: an occasional sentence of context, off the frame loop."""
