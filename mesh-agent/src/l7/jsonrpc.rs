//! One JSON-RPC 2.0 message from bytes.
