"""The catalogue of domain errors: what a caller is refused, and why.

Services raise ``AppError`` subclasses. Each names its problem type (``slug``), a fixed
``title`` and the HTTP ``status`` it answers with; app/problems.py renders them as RFC 9457
problems. Nothing here depends on the web framework."""

from typing import Any, ClassVar


class AppError(Exception):
    """A refusal the caller can act on. Subclasses fix ``slug``, ``title`` and ``status``."""

    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    status: ClassVar[int] = 500

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


class BadRequest(AppError):
    """Raised by the framework for a body it cannot decode; declared for the docs."""

    slug, title, status = "bad-request", "The request body cannot be read", 400


class Unauthorized(AppError):
    slug, title, status = "unauthorized", "Missing or invalid API key", 401


class Forbidden(AppError):
    slug, title, status = "forbidden", "The API key lacks the scope for this operation", 403


class NotFound(AppError):
    slug, title, status = "not-found", "Not found", 404


class Conflict(AppError):
    slug, title, status = "conflict", "Conflict with the current state", 409


class KeyTaken(Conflict):
    slug, title = "key-taken", "The key is already used by another coupon set"


class NameTaken(Conflict):
    slug, title = "name-taken", "The name is already used in this coupon set"


class PoolsNotSupported(Conflict):
    slug, title = "pools-not-supported", "Shared coupon sets have no pools"


class DefaultPoolProtected(Conflict):
    slug, title = "default-pool-protected", "The default pool cannot be renamed or deleted"


class LastAdminKey(Conflict):
    slug, title = "last-admin-key", "The last active admin key cannot be revoked"


class SetInUse(Conflict):
    slug, title = "set-in-use", "The coupon set has been used and cannot be deleted"


class PoolNotEmpty(Conflict):
    slug, title = "pool-not-empty", "The pool still holds codes"


class WrongSetKind(Conflict):
    slug, title = "wrong-set-kind", "The operation does not apply to this kind of set"


class WindowConflict(Conflict):
    slug, title = "validity-window", "valid_from would not be before valid_until"


class SetArchived(Conflict):
    slug, title = "set-archived", "The coupon set is archived"


class NotYetValid(Conflict):
    slug, title = "not-yet-valid", "The coupon set's validity window has not started"


class Expired(Conflict):
    slug, title = "expired", "The coupon set's validity window has ended"


class PoolExhausted(Conflict):
    slug, title = "pool-exhausted", "No code is left in the pool"


class AlreadyRedeemed(Conflict):
    slug, title = "already-redeemed", "The code has been used already"


class MaxUsesReached(Conflict):
    slug, title = "max-uses-reached", "The code has been used as often as allowed"


class RecipientMismatch(Conflict):
    slug, title = "recipient-mismatch", "The code belongs to another recipient"


class Voided(Conflict):
    slug, title = "voided", "The code has been voided"


class NotReturnable(Conflict):
    slug, title = "code-not-returnable", "Only an assigned, unused code can be returned"


class AmbiguousCode(Conflict):
    slug, title = "ambiguous-code", "Several coupon sets hold this code; name the set"


class InvalidRedemptionState(Conflict):
    slug, title = "invalid-redemption-state", "The redemption is not in a state that allows this"


class HoldExpired(Conflict):
    slug, title = "hold-expired", "The hold expired before it was confirmed"


class InsufficientCodes(Conflict):
    slug, title = "insufficient-codes", "The pool has fewer free codes than the delivery needs"


class DeliveryNotEditable(Conflict):
    slug, title = "delivery-not-editable", "The delivery was confirmed and can no longer change"


class DeliveryNotFinished(Conflict):
    slug, title = "delivery-not-finished", "The delivery has not finished its confirm"


class AttemptPending(Conflict):
    slug, title = "attempt-pending", "The webhook attempt is queued already"


class TemplateInvalid(AppError):
    slug, title, status = "template-error", "The message template cannot be used", 422


class IdempotencyKeyInUse(Conflict):
    slug, title = "idempotency-key-in-use", "A request with this Idempotency-Key is still running"


class PayloadTooLarge(AppError):
    slug, title, status = "payload-too-large", "Request body too large", 413


class UnsupportedMediaType(AppError):
    slug, title, status = "unsupported-media-type", "The content type is not supported", 415


class ValidationFailed(AppError):
    slug, title, status = "validation-error", "The request is not valid", 422


class InvalidTimeline(AppError):
    slug, title, status = "invalid-timeline", "The timeline cannot be cut as asked", 422


class CodeSpaceTooSmall(AppError):
    slug, title, status = "code-space-too-small", "The pattern cannot make that many codes", 422


class IdempotencyKeyReused(AppError):
    slug, title, status = (
        "idempotency-key-reused",
        "The Idempotency-Key was used with a different request",
        422,
    )


class UnknownCode(AppError):
    slug, title, status = "unknown-code", "No coupon set holds this code", 404


class TooManyRequests(AppError):
    slug, title, status = "too-many-requests", "Too many requests", 429


class InvalidCursor(AppError):
    slug, title, status = "invalid-cursor", "The pagination cursor is not valid", 422


class ServiceUnavailable(AppError):
    slug, title, status = "service-unavailable", "Service temporarily unavailable", 503


class UrlNotAllowed(AppError):
    slug, title, status = (
        "url-not-allowed",
        "The URL may not be called: not https, or not a public address",
        422,
    )
