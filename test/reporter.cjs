// mocha's spec reporter plus one plain closing line, "N passed, N failed[, N skipped]", that any CI can read.
const { reporters: { Spec } } = require('mocha')

class SpecWithTotals extends Spec {
  constructor(runner, options) {
    super(runner, options)
    runner.once('end', () => {
      const { passes, failures, pending } = runner.stats
      console.log(`${passes} passed, ${failures} failed${pending ? `, ${pending} skipped` : ''}`)
    })
  }
}

module.exports = SpecWithTotals
