# frozen_string_literal: true

class BackgroundJob < ApplicationRecord
  belongs_to :tenant, optional: true

  def progress
    job_progress.present? ? JSON.parse(job_progress) : {}
  end
end
