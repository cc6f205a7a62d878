/** The output format table lives in template/output-formats.ts; re-exported for the build steps that import it here. */
export { artifactName, diskFormat, diskFormats, planFor, type DiskPlan, type FormatPlan, type PackagePlan } from '../template/output-formats.js';
