//! A full private Postfix instance (its own config, queue and port) that requires SMTP AUTH through a
//! private Dovecot auth service, and relays what it accepts to a sink.

pub struct PostfixWithSasl;
