"""GKE: a JobSet manifest template for TPU node pools and its renderer."""
