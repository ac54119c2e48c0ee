/**
 * An account's email address, checked loosely: something@something, with no spaces,
 * control characters or invisible format characters (a right-to-left override would
 * print it reversed in `accounts export`, the admin API's answers, a terminal).
 */
export const EMAIL_PATTERN = /^[^\s@\p{Cc}\p{Cf}]+@[^\s@\p{Cc}\p{Cf}]+$/u;

/** The longest address SMTP carries. */
export const EMAIL_MAX_LENGTH = 254;
