# Prometheus and promtool from Debian's package (2.42 on Debian 12), for the tests of
# compose/prometheus/ (promtool test rules) and the test where a real Prometheus scrapes
# a running pipeline. Nothing to start: each test runs its own Prometheus on a free
# port. No recommends: they would add prometheus-node-exporter and smartmontools.

prometheus_install() {
  APT_NO_RECOMMENDS=1 apt_install prometheus
}
