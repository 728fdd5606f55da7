-- Gridwork relay schema, version 5: the relay keeps each record's view (the device's projection of
-- the document, as compact JSON) and sends it with snapshot and pull pages, so a new device lists and
-- searches its records without loading every document. NULL for rows written before this version
-- (and for documents that are not well-formed): those go out without a view.
ALTER TABLE records ADD COLUMN view TEXT;
