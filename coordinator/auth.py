"""Bearer-token authentication as a gRPC server interceptor.

Every RPC except `grpc.health.v1.Health/*` must carry `authorization: Bearer <token>` with one of
the accepted tokens (compared in constant time); otherwise it answers UNAUTHENTICATED.
"""

from __future__ import annotations

import hmac

import grpc

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _abort_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    def abort(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class BearerAuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [tok.encode() for tok in tokens if tok]
        if not self._tokens:
            raise ValueError("auth_tokens: at least one non-empty token is required")

    def valid(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        given = header[len("Bearer "):].strip().encode()
        ok = False
        for tok in self._tokens:  # no early exit: constant time over the token list
            ok |= hmac.compare_digest(given, tok)
        return ok

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        header = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value
                break
        if self.valid(header):
            return handler
        why = "missing bearer token" if header is None else "invalid bearer token"
        return _abort_handler(handler, why)
