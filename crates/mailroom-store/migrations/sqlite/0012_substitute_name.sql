-- The name shown with an account's Send As / Send On Behalf address ("Cronus Sales <sales@…>").
ALTER TABLE accounts ADD COLUMN substitute_name TEXT;
