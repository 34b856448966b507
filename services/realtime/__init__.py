"""Realtime service: live chat sessions streamed over gRPC, WebSocket (via the edge) and SSE."""
