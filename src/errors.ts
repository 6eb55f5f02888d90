/** An error the user caused (bad flag, missing file, unusable input): printed as one line, exit code 1. */
export class UserError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'UserError'
  }
}

/** Throws a UserError unless `condition` holds. */
export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new UserError(message)
}
