"""What an audit entry records (its ``action``): a module of its own, which the command line reads
without the database's modules."""

CLAIM = "claim"  # a claim's jobs, each with a signed URL of its image
IMAGE_URL = "image.url"
IMAGE_CONTENT = "image.content"
IMAGE_THUMBNAIL = "image.thumbnail"
THUMBNAILS_LISTED = "images.thumbnails"  # a listing with `include=thumbnail`
BLOB_READ = "blob.read"  # the local store's signed route served bytes
EXPORT = "export"
IMAGE_DELETED = "image.deleted"
ERASURE = "erasure"  # asked for (by where or by IDs)
IMAGES_ERASED = "images.erased"  # one batch of an erasure: the IDs it erased
RETENTION_RUN = "retention.run"
TOKEN_CREATED = "token.created"
TOKEN_REVOKED = "token.revoked"
ACTIONS = (
    CLAIM,
    IMAGE_URL,
    IMAGE_CONTENT,
    IMAGE_THUMBNAIL,
    THUMBNAILS_LISTED,
    BLOB_READ,
    EXPORT,
    IMAGE_DELETED,
    ERASURE,
    IMAGES_ERASED,
    RETENTION_RUN,
    TOKEN_CREATED,
    TOKEN_REVOKED,
)
