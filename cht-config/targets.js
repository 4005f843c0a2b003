/*
 * LTFU targets for the CHW: how many follow-ups were done this month, how many patients are back
 * in care, and how often the patient was reached within 8 days of the request (reaching a patient
 * within about 8 days roughly doubles return to care).
 */

const REQUEST_FORM = 'INTEROP_FOLLOW_UP';
const FOLLOW_UP_FORM = 'ltfu_follow_up';
const REACH_WITHIN_DAYS = 8;
const DAY_MS = 24 * 60 * 60 * 1000;

const followUp = (report) => (report.fields && report.fields.follow_up) || {};

module.exports = [
  {
    id: 'ltfu-follow-ups-this-month',
    type: 'count',
    icon: 'icon-ltfu-follow-up',
    goal: -1,
    translation_key: 'target.ltfu.follow_ups',
    subtitle_translation_key: 'targets.this_month.subtitle',
    appliesTo: 'reports',
    appliesToType: [FOLLOW_UP_FORM],
    date: 'reported',
    idType: 'report',
  },
  {
    id: 'ltfu-back-in-care-this-month',
    type: 'count',
    icon: 'icon-ltfu-follow-up',
    goal: -1,
    translation_key: 'target.ltfu.back_in_care',
    subtitle_translation_key: 'targets.this_month.subtitle',
    appliesTo: 'reports',
    appliesToType: [FOLLOW_UP_FORM],
    appliesIf: (contact, report) =>
      ['returning_to_care', 'already_returned'].indexOf(followUp(report).outcome) !== -1,
    date: 'reported',
    idType: 'report',
  },
  {
    id: 'ltfu-reached-within-8-days',
    type: 'percent',
    icon: 'icon-ltfu-follow-up',
    goal: 80,
    translation_key: 'target.ltfu.reached_in_time',
    subtitle_translation_key: 'targets.this_month.subtitle',
    appliesTo: 'reports',
    appliesToType: [REQUEST_FORM],
    passesIf: (contact, request) => contact.reports.some(report =>
      report.form === FOLLOW_UP_FORM &&
      followUp(report).contacted === 'yes' &&
      report.reported_date >= request.reported_date &&
      report.reported_date - request.reported_date <= REACH_WITHIN_DAYS * DAY_MS
    ),
    date: 'reported',
    idType: 'report',
  },
];
