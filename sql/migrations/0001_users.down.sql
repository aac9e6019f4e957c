DROP TABLE sessions;
DROP TABLE addresses;
DROP TABLE users;
