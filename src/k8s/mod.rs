//! Kubernetes glue (the only place kube is imported).
