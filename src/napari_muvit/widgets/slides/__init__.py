"""The slide-list dock (a cohort of slides, their outputs, next / previous)."""
