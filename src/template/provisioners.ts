/** Pure facts about a template's provisioners, for the layers above: each kind's module says them (provisioner-kinds/). */
export { appliesTo, describeProvisioner } from './provisioner-kinds/index.js';
