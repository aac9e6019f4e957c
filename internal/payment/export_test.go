package payment

// MaxIDLen exposes maxIDLen to the tests.
const MaxIDLen = maxIDLen
