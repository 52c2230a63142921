"""Text: tokenizer, vocab, text blocks and loaders, AWD-LSTM (ULMFiT) and BERT-family encoders, learners.

See docs/text.md for how the modules fit together.
"""
from learnkit.learner.interpret import ClassificationInterpretation
from learnkit.text.awd_lstm import AWDLSTM, LanguageModel, RNNRegularizer, TextClassifier
from learnkit.text.data import LMLoader, SubwordTextBlock, TextBlock, TextDataBunch
from learnkit.text.hf import HFClassifier, HFTokenizer
from learnkit.text.learner import (Perplexity, language_model_learner, load_encoder, save_encoder,
                                   text_classifier_learner, top_losses)
from learnkit.text.tokenizer import Tokenizer
from learnkit.text.vocab import Vocab

__all__ = ["AWDLSTM", "ClassificationInterpretation", "LMLoader", "LanguageModel", "Perplexity", "RNNRegularizer", "SubwordTextBlock",
           "TextBlock", "TextClassifier", "TextDataBunch", "Tokenizer", "Vocab", "language_model_learner",
           "load_encoder", "save_encoder", "text_classifier_learner", "top_losses", "HFClassifier", "HFTokenizer"]
