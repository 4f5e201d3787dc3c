"""Dashboard page: see schemewatch.dashboard.pages.accounts."""

from schemewatch.dashboard.pages import accounts

accounts()
