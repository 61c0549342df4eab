-- Accounts may send through each sending user's own mailbox (connector 'current-user'). SQLite
-- cannot alter a CHECK constraint; widening one does not change how rows are stored, so the table's
-- definition is edited in place, as SQLite documents for such changes
-- (https://www.sqlite.org/lang_altertable.html, "making other kinds of table schema changes"),
-- and the schema is reloaded.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (connector IN (''smtp'', ''pickup''))',
                          'CHECK (connector IN (''smtp'', ''pickup'', ''current-user''))')
 WHERE type = 'table' AND name = 'accounts';
PRAGMA writable_schema = RESET;
