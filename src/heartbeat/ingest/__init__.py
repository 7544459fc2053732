"""Images in: the one decode, thumbnails, uploads (multipart, by URL, direct) and imports of a folder or bucket."""
