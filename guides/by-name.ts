// The guides by name, and `--loss` specs such as 'id=1,clip=0.5' turned into one guide.
import { ClipGuide } from './clip.js'
import { parseLossSpec, type GuideName } from '../src/cli/settings.js'
import { combineGuides, type Guide, type GuideSettings } from './guide.js'
import { IdentityGuide, type IdNetwork } from './id.js'
import { LpipsGuide, type LpipsNet } from './lpips.js'
import { PerceptualGuide } from './perceptual.js'

export interface AllGuideSettings extends GuideSettings {
  /** the id guide's recognizer (default 'auto': ArcFace where the models folder has it, else face-api's network) */
  idNetwork?: IdNetwork
  /** the lpips trunk (default: vgg where present, else alex) */
  lpipsNet?: LpipsNet
}

const makers: Record<GuideName, (settings: AllGuideSettings) => Guide> = {
  id: s => new IdentityGuide({ ...s, network: s.idNetwork }),
  lpips: s => new LpipsGuide({ ...s, net: s.lpipsNet }),
  clip: s => new ClipGuide(s),
  perceptual: s => new PerceptualGuide(s),
}

/** One guide for a `--loss` spec: a name, or weighted names ('id=1,clip=0.5'). Call prepare() on it next. */
export function guideFromSpec(spec: string, settings: AllGuideSettings = {}): Guide {
  return combineGuides(parseLossSpec(spec).map(({ name, weight }) => ({ guide: makers[name](settings), weight })))
}
