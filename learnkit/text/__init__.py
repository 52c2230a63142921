"""Text: tokenizer, vocab, text blocks and loaders, AWD-LSTM (ULMFiT) and BERT-family encoders, learners.

See docs/text.md for how the modules fit together.
"""
