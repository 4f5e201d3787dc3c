"""Dashboard page: see schemewatch.dashboard.pages.alert_queue."""

from schemewatch.dashboard.pages import alert_queue

alert_queue()
