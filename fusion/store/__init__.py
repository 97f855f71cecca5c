"""The labeling store: the database, its schema and migrations, the store itself, image files."""
