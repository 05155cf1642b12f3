"""A rendered preview of the Grafana dashboards in deploy/grafana where no Grafana runs: every panel's
query on a real database (and a real Prometheus, where one is given), drawn in the dashboard's grid.

Development tooling, not part of the product packages; `python -m dashboard_preview --help`.
"""
