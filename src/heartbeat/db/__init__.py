"""Database models and the connection to MySQL/MariaDB or SQLite."""
