"""Dashboard page: see schemewatch.dashboard.pages.overview."""

from schemewatch.dashboard.pages import overview

overview()
