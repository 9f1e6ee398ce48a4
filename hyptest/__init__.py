"""hyptest: does in-context learning behave like gradient descent?"""
__version__ = "0.1.0"
