"""The local stack: real kube-apiserver and etcd, Prometheus, a mesh router with model
servers, and a PagerDuty Events API v2 receiver, for tests, the demo and benchmarks."""
