"""Dashboard page: see schemewatch.dashboard.pages.audit_log."""

from schemewatch.dashboard.pages import audit_log

audit_log()
