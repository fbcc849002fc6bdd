# frozen_string_literal: true

# Shaped like the job table of the app tenant_kit replaces code in (issue
# 21): the job's class in `job_klass`, an integer `state` enum without a
# "done", and a required `belongs_to :tenant`.
class AppBackgroundJob < ApplicationRecord
  belongs_to :tenant
  enum state: { planned: 0, running: 1, completed: 2, failed: 3 }

  def progress
    job_progress.present? ? JSON.parse(job_progress) : {}
  end
end
