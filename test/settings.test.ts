// The settings table (src/cli/settings.ts): every setting read and checked in one place, with one clear line
// for each bad value, defaults per world, and the checks across settings done before any work.
import assert from 'node:assert/strict'
import { settingFlags, settingsFromFlags } from '../src/cli/flags.js'
import { defaultOf, flagName, readFlags, SETTINGS, withDefaults, type SettingKey } from '../src/cli/settings.js'
import { UserError } from '../src/errors.js'
import { checkJob, JOB_SETTINGS } from '../guides/jobs.js'

const oneLine = (pattern: RegExp) => (e: unknown) => e instanceof UserError && !e.message.includes('\n') && pattern.test(e.message)

describe('settings declared once', () => {
  it('reads each flag text or refuses it with one line naming the flag', () => {
    assert.deepEqual(readFlags(['guideSteps', 'iters', 'lr', 'seeds', 'previews'], { guideSteps: '12,8', iters: '3', lr: '2e-2', seeds: '0-2,7', previews: 'x0,lcm' }, 'sdxl'),
      { guideSteps: [12, 8], iters: 3, lr: 0.02, seeds: [0, 1, 2, 7], previews: ['x0', 'lcm'] })
    const bad: [SettingKey, string, RegExp][] = [
      ['guideSteps', '', /--guide-steps "": expected a comma-separated list without empty items/],
      ['guideSteps', '5,a', /--guide-steps 5,a: a is not a non-negative integer/],
      ['guideSteps', '10,10', /10 is named twice/],
      ['at', '', /--at "": expected a comma-separated list/],
      ['previews', 'lcm,lcm', /lcm is named twice/],
      ['previews', 'x1', /unknown method x1/],
      ['lr', 'nan', /--lr nan: expected a positive number/],
      ['lr', '0', /--lr 0: expected a positive number/],
      ['iters', '-2', /--iters -2: expected an integer ≥ 0/],
      ['iters', '2.5', /--iters 2.5: expected an integer/],
      ['size', '0', /--size 0: expected an integer ≥ 32/],
      ['loss', 'idd', /unknown guide "idd"/],
      ['optimizer', 'sgdd', /expected one of sgd, adam/],
      ['seeds', '5-2', /5-2 is an empty range/],
      ['olderThan', '3x', /expected a duration/],
    ]
    for (const [key, text, message] of bad) assert.throws(() => readFlags([key], { [key]: text }, 'sdxl'), oneLine(message), `${key} ${text}`)
  })

  it('checks values the API gives with the same ranges', () => {
    assert.throws(() => withDefaults(['iters'], { iters: -1 }, 'sdxl'), oneLine(/--iters -1/))
    assert.throws(() => withDefaults(['guideSteps'], { guideSteps: [3, 3] }, 'sdxl'), oneLine(/3 is named twice/))
    assert.equal(withDefaults(['iters'], { iters: 4 }, 'sdxl').iters, 4)
  })

  it('takes defaults per world: the demo world has no text (cfg 1) and a smaller step', () => {
    assert.deepEqual([defaultOf('cfg', 'sdxl'), defaultOf('cfg', 'demo')], [5, 1])
    assert.deepEqual([defaultOf('lr', 'sdxl'), defaultOf('lr', 'demo')], [0.05, 0.01])
    assert.deepEqual([defaultOf('size', 'sdxl'), defaultOf('size', 'demo')], [1024, 256])
    const demo = withDefaults(JOB_SETTINGS, {}, 'demo')
    assert.equal(demo.size, 256)
    assert.equal(demo.normalize, true)
  })

  it('derives the oclif flags: kebab-case names, aliases, defaults in the help', () => {
    const flags = settingFlags(['guideSteps', 'lr', 'normalize'])
    assert.deepEqual(Object.keys(flags), ['guide-steps', 'lr', 'normalize'])
    assert.deepEqual(flags['guide-steps'].aliases, ['guide-step'])
    assert.match(String(flags.lr.description), /\[default: 0\.05; a demo world: 0\.01\]/)
    assert.equal((flags.normalize as { allowNo?: boolean }).allowNo, true)
    assert.deepEqual(settingsFromFlags(['guideSteps', 'normalize'], { 'guide-steps': '4', normalize: false }, 'sdxl'), { guideSteps: [4], normalize: false })
    for (const key of Object.keys(SETTINGS)) assert.match(flagName(key), /^[a-z]+(-[a-z]+)*$/)
  })

  it('checks settings against each other and the world before any work', () => {
    const job = (over: object) => ({ ...withDefaults(JOB_SETTINGS, { ref: 'face.png', ...over }, 'demo'), prompt: undefined })
    const demo = { kind: 'demo' as const, size: 256, text: false }
    assert.deepEqual(checkJob(job({}), demo), [])
    assert.throws(() => checkJob(job({ size: 128 }), demo), oneLine(/--size 128: this demo world's models work at 256 only/))
    assert.throws(() => checkJob(job({ guideSteps: [60] }), demo), oneLine(/step 60 is outside 0…49/))
    assert.throws(() => checkJob(job({ refText: 'a face' }), demo), oneLine(/--ref-text is the target of a clip loss, and --loss id has no clip term/))
    assert.throws(() => checkJob(job({ ref: undefined }), demo), oneLine(/--loss id needs --ref IMAGE/))
    assert.deepEqual(checkJob(job({ ref: undefined }), demo, ['none']), [], 'no reference needed without guidance')
    assert.throws(() => checkJob(job({ guideSize: 128 }), demo), oneLine(/--guide-size: a demo world's models work at its own size only/))
    const sdxl = { kind: 'sdxl' as const, text: true }
    assert.throws(() => checkJob({ ...withDefaults(JOB_SETTINGS, { ref: 'f.png', size: 1000 }, 'sdxl') }, sdxl), oneLine(/--size 1000: expected a multiple of 32/))
    assert.throws(() => checkJob({ ...withDefaults(JOB_SETTINGS, { ref: 'f.png', guideSize: 48 }, 'sdxl') }, sdxl), oneLine(/--guide-size 48: expected a multiple of 32 up to --size \(1024\)/))
    assert.throws(() => checkJob({ ...withDefaults(JOB_SETTINGS, { ref: 'f.png', guideSize: 2048 }, 'sdxl') }, sdxl), oneLine(/--guide-size 2048/))
    assert.deepEqual(checkJob({ ...withDefaults(JOB_SETTINGS, { loss: 'clip', refText: 'a cat' }, 'sdxl') }, sdxl), [])
    assert.deepEqual(checkJob({ ...job({ cfg: 5 }), prompt: 'a cat' }, demo), ['this world has no text: the prompt is ignored', '--cfg 5 in a world without text: the same image at twice the work (cfg 1)'])
  })
})
