"""Server-rendered console, clerk and H5 pages: templates, static files, auth and i18n plumbing."""
