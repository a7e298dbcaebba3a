"""The slide-list dock (a cohort of slides, their outputs, next / previous)."""

from .dock import SlideListWidget

__all__ = ["SlideListWidget"]
