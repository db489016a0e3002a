-- A member's language for pages (issue 7), chosen on the account page: a language tag such as
-- `es`, one the node has a catalog for. NULL: the browser's Accept-Language decides.
ALTER TABLE users ADD COLUMN language TEXT CHECK (language IS NULL OR length(language) BETWEEN 2 AND 16);
