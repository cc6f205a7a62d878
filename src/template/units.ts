/** The units' parsers live in util/ (a CLI flag reads them too); the template layer's code imports them from here. */
export { durationSetting, formatBytes, formatDuration, parseDuration, parseSize } from '../util/units.js';
