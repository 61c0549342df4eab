-- Accounts may send through Microsoft Graph (connector 'microsoft365'). As in 0018, the CHECK
-- constraint is widened by editing the table's definition in place
-- (https://www.sqlite.org/lang_altertable.html, "making other kinds of table schema changes").
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (connector IN (''smtp'', ''pickup'', ''current-user''))',
                          'CHECK (connector IN (''smtp'', ''pickup'', ''current-user'', ''microsoft365''))')
 WHERE type = 'table' AND name = 'accounts';
PRAGMA writable_schema = RESET;
