"""gRPC service: contract in proto/, generated stubs in serve/generated/ (built, never edited)."""
