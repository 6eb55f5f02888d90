// A guide job as scripts and the commands run it (guides/jobs.ts): one models folder, opened once.
import assert from 'node:assert/strict'
import { ModelsFolder } from '../src/diffusion/models-folder.js'
import { closeSessions } from '../src/onnx/session.js'
import { guideJob, runGuideJob } from '../guides/jobs.js'

describe('guide jobs', () => {
  after(() => closeSessions())

  it('open the models folder once: the reference, the guide, the evaluation and the engine share it', async () => {
    const at = ModelsFolder.at
    const opened: string[] = []
    ModelsFolder.at = async (dir: string) => { opened.push(dir); return at.call(ModelsFolder, dir) }
    try {
      const job = await guideJob({ world: 'demo', loss: 'id', ref: 'world:dev', steps: 6, guideSteps: [2], iters: 1, lr: 0.01 })
      assert.equal(job.folder.world?.kind, 'demo')
      const result = await runGuideJob(job)
      assert.equal(result.iterations.length, 1)
      assert.ok(result.metrics.world, 'the demo world placed the final latent')
      assert.deepEqual(opened, [job.folder.dir])
    } finally {
      ModelsFolder.at = at
    }
  })
})
