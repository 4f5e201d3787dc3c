"""Dashboard page: see schemewatch.dashboard.pages.model_view."""

from schemewatch.dashboard.pages import model_view

model_view()
