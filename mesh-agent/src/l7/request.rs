//! The entry point the proxy calls for every HTTP request.
