# frozen_string_literal: true

class Tenant < ApplicationRecord
  has_many :users, dependent: :destroy
  has_many :projects, dependent: :destroy
  has_many :tasks
  has_many :tags, dependent: :destroy
  has_many :settings, dependent: :delete_all
  has_many :background_jobs, dependent: :delete_all
end
